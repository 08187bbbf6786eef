"""Face detection on images, folders and videos: see ``python demo.py --help`` (srn_d2.tools.detect)."""

from srn_d2.tools.detect import main

if __name__ == "__main__":
    raise SystemExit(main())
