"""Import Detectron2 without the deprecation warnings its import-time TorchScript prints.

When imported, fvcore.nn (which detectron2.layers imports) compiles two focal
losses with ``torch.jit.script``, and detectron2.modeling compiles its box
coders the same way; torch deprecates ``torch.jit.script`` since 2.10. Every
program importing Detectron2 would print those warnings, about code that is
neither srn_d2's nor run by it. srn_d2's modules that import Detectron2 import
this module first; the warning filter applies to these imports only.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
    )
    import detectron2.modeling  # noqa: F401
    import fvcore.nn  # noqa: F401
