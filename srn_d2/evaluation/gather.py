"""Collecting per-image predictions from every process, as Detectron2's evaluators do."""
from typing import Dict, Optional

from detectron2.utils import comm


def gather_predictions(predictions: Dict, distributed: bool) -> Optional[Dict]:
    """All processes' ``{image_id: predictions}`` merged on the main process; None elsewhere."""
    if not distributed:
        return predictions
    comm.synchronize()
    gathered = comm.gather(predictions, dst=0)
    if not comm.is_main_process():
        return None
    return {k: v for part in gathered for k, v in part.items()}
