"""Face detection with an ONNX file from ``python -m srn_d2.tools.export``, on onnxruntime.

    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    detector = ONNXFaceDetector("export/model.onnx")
    boxes, scores = detector(cv2.imread("photo.jpg"))   # (N, 4) x1 y1 x2 y2, (N,), best first

numpy, OpenCV's image layout (BGR, uint8, H x W x 3), Pillow for the test-time
resize and onnxruntime; no torch, no Detectron2. The file carries what the
exported config says about its input (channel order, test-time resize), so
the detections are those of the PyTorch model given the same image.
"""
from typing import Optional, Tuple

import numpy as np
import onnxruntime
from PIL import Image

# Metadata keys written by srn_d2.tools.export.
INPUT_FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST = "srn_d2.input_format", "srn_d2.min_size_test", "srn_d2.max_size_test"


class ONNXFaceDetector:
    """An exported SRN: a BGR image in, boxes and scores out, as :class:`detectron2.engine.DefaultPredictor`."""

    def __init__(self, path: str, num_threads: Optional[int] = None, spin_wait: bool = True):
        """
        Args:
            path: the ``model.onnx`` written by ``srn_d2.tools.export``.
            num_threads: onnxruntime's intra-op threads (default: its own choice).
            spin_wait: let idle threads spin for the next call (onnxruntime's default,
                fastest back to back); False when other work shares the cores.
        """
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in (INPUT_FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST) if k not in metadata]
        if missing:
            raise ValueError(f"{path}: no {missing} metadata; export the model with python -m srn_d2.tools.export")
        self.input_format = metadata[INPUT_FORMAT]
        self.min_size = int(metadata[MIN_SIZE_TEST])
        self.max_size = int(metadata[MAX_SIZE_TEST])

    def __call__(self, bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """
        Args:
            bgr: (H, W, 3) uint8 image in OpenCV's channel order.

        Returns:
            boxes: (N, 4) float32 x1, y1, x2, y2 in the image's pixels, clipped to it;
            scores: (N,) float32, best first.
        """
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 BGR image, got {bgr.shape} {bgr.dtype}")
        image = bgr[:, :, ::-1] if self.input_format == "RGB" else bgr
        height, width = image.shape[:2]
        image = self._resize(image)
        boxes, scores, _ = self.session.run(
            None, {"image": np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)}
        )
        return self._to_original(boxes, image.shape[:2], (height, width)), scores

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """Detectron2's ResizeShortestEdge at test time (INPUT.MIN_SIZE_TEST, 0 = none), with PIL as it resizes."""
        if self.min_size == 0:
            return image
        height, width = image.shape[:2]
        scale = self.min_size / min(height, width)
        new_h, new_w = (self.min_size, scale * width) if height < width else (scale * height, self.min_size)
        if max(new_h, new_w) > self.max_size:
            shrink = self.max_size / max(new_h, new_w)
            new_h, new_w = new_h * shrink, new_w * shrink
        new_h, new_w = int(new_h + 0.5), int(new_w + 0.5)
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))

    @staticmethod
    def _to_original(boxes: np.ndarray, resized: Tuple[int, int], original: Tuple[int, int]) -> np.ndarray:
        """Boxes of the resized image in the original's pixels, clipped, as detector_postprocess does."""
        if resized == original:
            return boxes
        scale = np.array([original[1] / resized[1], original[0] / resized[0]] * 2, dtype=np.float32)
        boxes = boxes * scale
        return np.clip(boxes, 0, np.array([original[1], original[0]] * 2, dtype=np.float32))
