"""Face detection demo: see ``python demo.py --help`` (srn_d2.tools.demo)."""
from srn_d2.tools.demo import main

if __name__ == "__main__":
    main()
