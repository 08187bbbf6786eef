"""Face detection with an ONNX file from ``python -m srn_d2.tools.export``, on onnxruntime.

    from srn_d2.deploy.onnx_runtime import ONNXFaceDetector

    detector = ONNXFaceDetector("export/model.onnx")
    boxes, scores = detector(cv2.imread("photo.jpg"))   # (N, 4) x1 y1 x2 y2, (N,), best first
    for boxes, scores in detector([image_a, image_b]):  # a list: one result per image
        ...
    # a model trained with landmarks (MODEL.SRN.LANDMARKS.ENABLED) also gives (N, 5, 2) points
    boxes, scores, landmarks = ONNXFaceDetector("export_landmarks/model.onnx")(image)

A batched export (``export --batch``, ``model_batched.onnx``) runs a list in
one call per image size, or in one padded call with ``pad=True``; a one-image
export runs a list image by image.

numpy, OpenCV's image layout (BGR, uint8, H x W x 3), Pillow for the test-time
resize and onnxruntime; no torch, no Detectron2. The file carries what the
exported config says about its input (channel order, test-time resize), so
the detections are those of the PyTorch model given the same image.
"""

import logging
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime
from PIL import Image

from ..errors import InputError
from ..utils.image_checks import MAX_TEST_PIXELS, check_bgr_image, check_test_size

logger = logging.getLogger(__name__)

# Metadata keys written by srn_d2.tools.export.
INPUT_FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST = (
    "srn_d2.input_format",
    "srn_d2.min_size_test",
    "srn_d2.max_size_test",
)
# "fp32", or "int8" for models from ``export --quantize int8`` (absent in older exports: fp32).
PRECISION = "srn_d2.precision"
# One id per run of the export, shared by model.onnx and its int8 twin model_int8.onnx (absent in older exports).
EXPORT_ID = "srn_d2.export_id"
# "WxH": the one image size a graph exported with --input-size takes (absent: any size).
INPUT_SIZE = "srn_d2.input_size"
# The graph's interfaces, as srn_d2.deploy.export writes them: (input name, rank) pairs and output names.
SINGLE_INTERFACE = ((("image", 3),), ("boxes", "scores", "classes"))
BATCHED_INTERFACE = (
    (("images", 4), ("image_sizes", 2)),
    ("boxes", "scores", "classes", "batch_index"),
)
# The output a landmark model adds last to either interface: (N, K, 2) x, y of each detection's points.
LANDMARKS = "landmarks"
# One image's boxes (N, 4) and scores (N,), and a landmark model's (N, K, 2) points.
Detections = Tuple[np.ndarray, ...]


def with_landmarks(interface):
    """``interface`` with the landmark output added."""
    inputs, outputs = interface
    return inputs, (*outputs, LANDMARKS)


INTERFACES = (
    SINGLE_INTERFACE,
    BATCHED_INTERFACE,
    with_landmarks(SINGLE_INTERFACE),
    with_landmarks(BATCHED_INTERFACE),
)


class ONNXFaceDetector:
    """An exported SRN: a BGR image in, boxes and scores (and landmarks) out, as
    :class:`detectron2.engine.DefaultPredictor`."""

    def __init__(self, path: str, num_threads: Optional[int] = None, spin_wait: bool = True):
        """
        Args:
            path: the ``model.onnx`` written by ``srn_d2.tools.export``.
            num_threads: onnxruntime's intra-op threads (default: its own choice).
            spin_wait: let idle threads spin for the next call (onnxruntime's default,
                fastest back to back); False when other work shares the cores.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(
                f"ONNXFaceDetector takes the path of a model.onnx, not {type(path).__name__}"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        self.path = str(path)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )
        except (
            Exception
        ) as error:  # onnxruntime's own types: InvalidProtobuf, Fail, InvalidGraph, ...
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise InputError(f"{path}: not a readable ONNX model ({reason})") from None
        self._check_interface(path)
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in (INPUT_FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST) if k not in metadata]
        if missing:
            raise InputError(
                f"{path}: no {missing} metadata; export the model with python -m srn_d2.tools.export"
            )
        self.input_format = metadata[INPUT_FORMAT]
        self.precision = metadata.get(PRECISION, "fp32")
        self.export_id = metadata.get(EXPORT_ID)
        if self.precision == "int8":
            check_int8_twin(path, self.export_id)
        if self.input_format not in ("BGR", "RGB"):
            raise InputError(
                f"{path}: metadata {INPUT_FORMAT} = {self.input_format!r}: must be BGR or RGB"
            )
        self.input_size = (
            parse_input_size(metadata[INPUT_SIZE], f"{path}: metadata {INPUT_SIZE}")
            if INPUT_SIZE in metadata
            else None
        )
        self.min_size = _size_metadata(path, metadata, MIN_SIZE_TEST)
        self.max_size = _size_metadata(path, metadata, MAX_SIZE_TEST)
        if self.min_size and self.max_size < self.min_size:
            raise InputError(
                f"{path}: metadata {MAX_SIZE_TEST} = {self.max_size} is below {MIN_SIZE_TEST} = "
                f"{self.min_size}"
            )

    def _check_interface(self, path: str) -> None:
        interface = (
            tuple((i.name, len(i.shape)) for i in self.session.get_inputs()),
            tuple(o.name for o in self.session.get_outputs()),
        )
        if interface not in INTERFACES:
            raise InputError(
                f"{path}: takes {list(interface[0])} and gives {list(interface[1])}; a model exported by "
                f"srn_d2.tools.export takes {list(SINGLE_INTERFACE[0])} and gives {list(SINGLE_INTERFACE[1])}, "
                f"or, batched, takes {list(BATCHED_INTERFACE[0])} and gives {list(BATCHED_INTERFACE[1])}, "
                f"either followed by {LANDMARKS!r} for a landmark model"
            )
        self.batched = interface[0] == BATCHED_INTERFACE[0]
        self.has_landmarks = interface[1][-1] == LANDMARKS
        rank = len(self.session.get_outputs()[-1].shape)
        if self.has_landmarks and rank != 3:
            raise InputError(
                f"{path}: gives {LANDMARKS!r} of rank {rank}; the export writes them as (N, K, 2) "
                "x, y per detection and point"
            )

    def __call__(
        self, images: Union[np.ndarray, Sequence[np.ndarray]], pad: bool = False
    ) -> Union[Detections, List[Detections]]:
        """
        Args:
            images: (H, W, 3) uint8 image in OpenCV's channel order, or a list of them.
            pad: batched models only: run images of different sizes in one call,
                padded to the largest (faster; the detections of a padded image
                differ slightly from its own near its bottom and right edges, and
                everywhere in models with GroupNorm). By default each size runs
                in a call of its own and every image gets exactly its own detections.

        Returns:
            for one image: boxes (N, 4) float32 x1, y1, x2, y2 in the image's pixels,
            clipped to it, and scores (N,) float32, best first; from a landmark model
            (``has_landmarks``) also landmarks (N, K, 2) float32 x, y in the image's
            pixels, not clipped (as Detectron2's ``detector_postprocess`` leaves keypoints).
            For a list, a list of those.
        """
        if not isinstance(images, (list, tuple)):
            return self([check_bgr_image(images)])[0]
        for index, bgr in enumerate(images):
            try:
                check_bgr_image(bgr)
            except ValueError as error:
                raise InputError(f"image {index} of {len(images)}: {error}") from None
        prepared = [self._prepare(bgr) for bgr in images]
        results: List[Optional[Detections]] = [None] * len(images)
        for group in self._calls(prepared, pad):
            chw = [prepared[i][0] for i in group]
            for i, detections in zip(group, self.run_graph(chw)):
                results[i] = self._to_original(detections, prepared[i][0].shape[1:], prepared[i][1])
        return results

    def _prepare(self, bgr: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """-> the (3, h, w) float32 input of the graph and the image's own (H, W)."""
        image = bgr[:, :, ::-1] if self.input_format == "RGB" else bgr
        resized = self._resize(image)
        if self.input_size is not None and resized.shape[:2] != self.input_size:
            raise InputError(
                f"{self.path}: exported for {format_input_size(self.input_size)} images only "
                f"(export --input-size); this one is {format_input_size(resized.shape[:2])} after "
                "the test-time resize. Resize the images to it, or export without --input-size for "
                "any size"
            )
        return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32), image.shape[:2]

    def _calls(self, prepared, pad: bool) -> List[List[int]]:
        """Which images go in one session call: one by one for a one-image model; for a batched
        one, all of them (``pad``) or those of one size together."""
        if not self.batched:
            return [[i] for i in range(len(prepared))]
        if pad:
            return [list(range(len(prepared)))] if prepared else []
        by_size = {}
        for i, (chw, _) in enumerate(prepared):
            by_size.setdefault(chw.shape, []).append(i)
        return list(by_size.values())

    def run_graph(self, images: List[np.ndarray]) -> List[Detections]:
        """(3, h, w) float32 images as the graph takes them (resized, in its channel order; one
        for a one-image model) -> their (boxes, scores[, landmarks]) in those pixels, from one
        session call."""
        outputs = dict(
            zip(
                (o.name for o in self.session.get_outputs()),
                self.session.run(None, graph_inputs(images, self.batched)),
            )
        )
        kept = self._checked(
            [
                outputs[name]
                for name in ("boxes", "scores", LANDMARKS, "batch_index")
                if name in outputs
            ],
            len(images),
        )
        if not self.batched:
            return [tuple(kept)]
        return split_by_image(kept[:-1], kept[-1], len(images))

    def _checked(self, outputs: List[np.ndarray], num_images: int) -> List[np.ndarray]:
        """The graph's (boxes, scores[, landmarks][, batch_index]), checked: shapes that do not fit
        together, or a batch index outside the batch, are a ValueError naming the model; detections
        with a non-finite value or a box of negative width or height are dropped, counted in a
        warning (a model that gives them is broken, and nothing downstream could use them)."""
        boxes, scores = outputs[:2]
        count = len(scores) if scores.ndim == 1 else -1
        shapes_fit = (
            boxes.ndim == 2
            and boxes.shape == (count, 4)
            and all(len(o) == count for o in outputs[2:])
            and (not self.has_landmarks or (outputs[2].ndim == 3 and outputs[2].shape[2] == 2))
        )
        if not shapes_fit:
            raise InputError(
                f"{self.path}: its graph gave outputs of shapes {[o.shape for o in outputs]}; the export "
                "writes boxes (N, 4), scores (N,)"
                + (", landmarks (N, K, 2)" if self.has_landmarks else "")
                + (", batch_index (N,)" if self.batched else "")
            )
        if self.batched:
            batch_index = outputs[-1]
            if len(batch_index) and (batch_index.min() < 0 or batch_index.max() >= num_images):
                raise InputError(
                    f"{self.path}: its graph gave a batch_index of {int(batch_index.max())} or "
                    f"{int(batch_index.min())} for a batch of {num_images} images"
                )
        values = [
            o.reshape(count, int(np.prod(o.shape[1:])))
            for o in outputs[: 3 if self.has_landmarks else 2]
        ]
        usable = np.isfinite(np.concatenate(values, axis=1)).all(axis=1)
        usable &= (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
        if not usable.all():
            logger.warning(
                f"{self.path}: dropped {int((~usable).sum())} of {count} detections with a non-finite "
                "value or a box of negative width or height"
            )
            return [o[usable] for o in outputs]
        return outputs

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """Detectron2's ResizeShortestEdge at test time (INPUT.MIN_SIZE_TEST, 0 = none), with PIL as it
        resizes; ImageTooLargeError beyond the detectors' bound, before anything is allocated."""
        height, width = image.shape[:2]
        new_h, new_w = check_test_size(height, width, self.min_size, self.max_size)
        if (new_h, new_w) == (height, width):
            return image
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))

    @staticmethod
    def _to_original(
        detections: Detections, resized: Tuple[int, int], original: Tuple[int, int]
    ) -> Detections:
        """Detections of the resized image in the original's pixels, as detector_postprocess maps
        them: boxes scaled and clipped, landmarks scaled."""
        if resized == original:
            return detections
        boxes, scores, *landmarks = detections
        scale = np.array([original[1] / resized[1], original[0] / resized[0]], dtype=np.float32)
        boxes = np.clip(
            boxes * np.tile(scale, 2), 0, np.array([original[1], original[0]] * 2, dtype=np.float32)
        )
        return (boxes, scores, *(points * scale for points in landmarks))


def graph_inputs(images: Sequence[np.ndarray], batched: bool) -> Dict[str, np.ndarray]:
    """(3, h_i, w_i) float32 images as the inputs of an exported graph: the one image of a
    one-image export, or all of them padded for a batched one."""
    if not batched:
        (image,) = images
        return {SINGLE_INTERFACE[0][0][0]: image}
    return {name: value for (name, _), value in zip(BATCHED_INTERFACE[0], pad_images(images))}


def split_by_image(
    arrays: Sequence[np.ndarray], batch_index: np.ndarray, count: int
) -> List[Tuple[np.ndarray, ...]]:
    """Per-detection outputs of a batched graph -> each of its ``count`` images' own rows of them."""
    return [tuple(x[batch_index == i] for x in arrays) for i in range(count)]


def pad_images(images: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(3, h_i, w_i) float32 images -> the batched graph's inputs: (B, 3, H, W) with each image
    in its top-left corner (the graph ignores what lies outside it) and (B, 2) int64 sizes."""
    sizes = np.array([image.shape[1:] for image in images], dtype=np.int64).reshape(-1, 2)
    batch = np.zeros((len(images), 3, *sizes.max(axis=0, initial=1)), dtype=np.float32)
    for target, image in zip(batch, images):
        target[:, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def check_int8_twin(int8_path: str, export_id: Optional[str]) -> None:
    """Warn when the fp32 model beside an int8 one (``model_int8.onnx`` -> ``model.onnx``) comes from
    another export: an export interrupted between writing the two, or a later fp32 export alone."""
    stem, extension = os.path.splitext(int8_path)
    fp32_path = stem[: -len("_int8")] + extension if stem.endswith("_int8") else None
    if fp32_path is None or export_id is None or not os.path.isfile(fp32_path):
        return
    try:
        import onnx  # the export's package; a deployment without it skips the check
    except ImportError:
        return
    try:
        fp32_id = {
            p.key: p.value for p in onnx.load(fp32_path, load_external_data=False).metadata_props
        }.get(EXPORT_ID)
    except Exception:  # a damaged fp32 file is its own reader's business
        return
    if fp32_id != export_id:
        logger.warning(
            f"{int8_path} and {fp32_path} come from different exports ({EXPORT_ID} {export_id} and "
            f"{fp32_id}): they are not each other's twins; export both again"
        )


def format_input_size(size: Tuple[int, int]) -> str:
    """(height, width) -> "WxH", as --input-size and the metadata write it."""
    return f"{size[1]}x{size[0]}"


def parse_input_size(text: str, where: str) -> Tuple[int, int]:
    """ "WxH" (the export's --input-size, or a model's metadata) -> (height, width); InputError
    naming ``where`` unless both are whole numbers of pixels, at least 1 and at most the test
    image's bound in all."""
    match = re.fullmatch(r"([0-9]{1,9})x([0-9]{1,9})", text)
    if match:
        size = int(match[2]), int(match[1])
        if min(size) >= 1 and size[0] * size[1] <= MAX_TEST_PIXELS:
            return size
    raise InputError(
        f"{where} = {text!r}: must be WIDTHxHEIGHT in whole pixels, such as 640x480: width and "
        f"height at least 1, at most {MAX_TEST_PIXELS:,} pixels in all"
    )


def _size_metadata(path: str, metadata, key: str) -> int:
    try:
        value = int(metadata[key])
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(
            f"{path}: metadata {key} = {metadata[key]!r}: must be a whole number of pixels, 0 or more"
        )
    return value
