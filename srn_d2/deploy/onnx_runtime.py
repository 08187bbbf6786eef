"""Face detection with an ONNX file from ``python -m srn_d2.tools.export``, on onnxruntime.

    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    detector = ONNXFaceDetector("export/model.onnx")
    boxes, scores = detector(cv2.imread("photo.jpg"))   # (N, 4) x1 y1 x2 y2, (N,), best first

numpy, OpenCV's image layout (BGR, uint8, H x W x 3), Pillow for the test-time
resize and onnxruntime; no torch, no Detectron2. The file carries what the
exported config says about its input (channel order, test-time resize), so
the detections are those of the PyTorch model given the same image.
"""
import os
from typing import Optional, Tuple

import numpy as np
import onnxruntime
from PIL import Image

from ..utils.image_checks import check_bgr_image

# Metadata keys written by srn_d2.tools.export.
INPUT_FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST = "srn_d2.input_format", "srn_d2.min_size_test", "srn_d2.max_size_test"
# "fp32", or "int8" for models from ``export --quantize int8`` (absent in older exports: fp32).
PRECISION = "srn_d2.precision"
# The graph's interface, as srn_d2.deploy.export writes it.
INPUT_NAME, INPUT_RANK, OUTPUT_NAMES = "image", 3, ("boxes", "scores", "classes")


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
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"ONNXFaceDetector takes the path of a model.onnx, not {type(path).__name__}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own types: InvalidProtobuf, Fail, InvalidGraph, ...
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{path}: not a readable ONNX model ({reason})") from None
        self._check_interface(path)
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in (INPUT_FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST) if k not in metadata]
        if missing:
            raise ValueError(f"{path}: no {missing} metadata; export the model with python -m srn_d2.tools.export")
        self.input_format = metadata[INPUT_FORMAT]
        self.precision = metadata.get(PRECISION, "fp32")
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"{path}: metadata {INPUT_FORMAT} = {self.input_format!r}: must be BGR or RGB")
        self.min_size = _size_metadata(path, metadata, MIN_SIZE_TEST)
        self.max_size = _size_metadata(path, metadata, MAX_SIZE_TEST)
        if self.min_size and self.max_size < self.min_size:
            raise ValueError(f"{path}: metadata {MAX_SIZE_TEST} = {self.max_size} is below {MIN_SIZE_TEST} = "
                             f"{self.min_size}")

    def _check_interface(self, path: str) -> None:
        inputs = [(i.name, len(i.shape)) for i in self.session.get_inputs()]
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != [(INPUT_NAME, INPUT_RANK)] or outputs != OUTPUT_NAMES:
            raise ValueError(
                f"{path}: takes {inputs} and gives {list(outputs)}; a model exported by srn_d2.tools.export takes "
                f"one (3, H, W) {INPUT_NAME!r} and gives {list(OUTPUT_NAMES)}"
            )

    def __call__(self, bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """
        Args:
            bgr: (H, W, 3) uint8 image in OpenCV's channel order.

        Returns:
            boxes: (N, 4) float32 x1, y1, x2, y2 in the image's pixels, clipped to it;
            scores: (N,) float32, best first.
        """
        check_bgr_image(bgr)
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


def _size_metadata(path: str, metadata, key: str) -> int:
    try:
        value = int(metadata[key])
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{path}: metadata {key} = {metadata[key]!r}: must be a whole number of pixels, 0 or more")
    return value
