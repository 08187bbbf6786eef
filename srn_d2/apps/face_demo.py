"""Detecting faces on images, folders of images and videos, drawing them and writing
the results: the library behind ``demo.py`` (``srn_d2.tools.detect``).

For an image ``<stem>.<ext>`` :class:`FaceDemo` writes to its output folder:
``<stem>.<ext>`` with the detections drawn, ``<stem>.txt`` in the WIDER FACE
submission format (name, count, ``x y w h score`` lines, as
TEST.WIDERFACE_SUBMISSION_FORMAT says) and ``<stem>.json``, a list of
``{"bbox": [x, y, w, h], "score": s}``. For a video: ``<stem>.mp4`` drawn, and
``<stem>.json``, a list of ``{"frame": i, "detections": [...]}``.
"""

import collections
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from ..data.image_io import read_image
from ..engine.defaults import FacePredictor
from ..errors import ImageTooLargeError, InputError
from ..evaluation.face_evaluator import instances_to_xywhs
from ..evaluation.prediction_files import write_widerface_predictions
from ..utils.file_io import (
    atomic_write_path,
    check_output_folder,
    check_output_path,
    write_image,
    write_text,
)

__all__ = [
    "FaceDemo",
    "DemoSummary",
    "FrameRate",
    "draw_frame_rate",
    "onnx_predictor",
    "plan_inputs",
    "run_demo",
]

logger = logging.getLogger("srn_d2.detect")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def _metadata(cfg) -> Metadata:
    names = [n for n in cfg.DATASETS.TEST if n in MetadataCatalog.list()]
    if names and MetadataCatalog.get(names[0]).get("thing_classes"):
        return MetadataCatalog.get(names[0])
    return Metadata(thing_classes=["face"])


def detections_json(instances: Instances) -> List[Dict]:
    """Each detection's ``bbox`` (x, y, w, h), ``score`` and, from a landmark model, ``landmarks`` [[x, y] x 5]."""
    xywhs = instances_to_xywhs(instances)
    detections = [
        {"bbox": [round(float(v), 2) for v in row[:4]], "score": round(float(row[4]), 6)}
        for row in xywhs
    ]
    if instances.has("pred_keypoints"):
        points = np.round(instances.pred_keypoints[..., :2].numpy().astype(np.float64), 2).tolist()
        for detection, face_points in zip(detections, points):
            detection["landmarks"] = face_points
    return detections


@dataclass
class DemoSummary:
    images: int = 0
    videos: int = 0
    skipped: List[str] = field(default_factory=list)


def onnx_predictor(path: str) -> Callable[[np.ndarray], Instances]:
    """A BGR image -> Instances, from a file exported by srn_d2.tools.export."""
    from ..deploy.onnx_runtime import ONNXFaceDetector

    detector = ONNXFaceDetector(path)

    def predict(bgr: np.ndarray) -> Instances:
        boxes, scores, *landmarks = detector(bgr)
        instances = Instances(bgr.shape[:2])
        instances.pred_boxes = Boxes(torch.from_numpy(boxes))
        instances.scores = torch.from_numpy(scores)
        instances.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
        if landmarks:  # a landmark model's (N, K, 2) points
            (points,) = landmarks
            # Detectron2's layout, as the PyTorch model gives it: x, y and the face's score.
            point_scores = np.broadcast_to(scores[:, None, None], (*points.shape[:2], 1))
            instances.pred_keypoints = torch.from_numpy(
                np.concatenate([points, point_scores], axis=-1)
            )
        return instances

    return predict


class FrameRate:
    """Frames per second of detection, over the last ``window`` frames: what the picture shows."""

    def __init__(self, window: int = 30):
        self.seconds = collections.deque(maxlen=window)
        self.total_seconds = 0.0
        self.frames = 0

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.total_seconds += seconds
        self.frames += 1

    @property
    def recent(self) -> float:
        return len(self.seconds) / max(sum(self.seconds), 1e-9)

    @property
    def overall(self) -> float:
        return self.frames / max(self.total_seconds, 1e-9)


def draw_frame_rate(bgr: np.ndarray, frames_per_second: float) -> np.ndarray:
    """``bgr`` with "<rate> FPS" written in its top-left corner, white on a black band."""
    text = f"{frames_per_second:.1f} FPS"
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
    cv2.rectangle(bgr, (0, 0), (width + 12, height + baseline + 12), (0, 0, 0), -1)
    cv2.putText(
        bgr, text, (6, height + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA
    )
    return bgr


class FaceDemo:
    """Detects, draws and writes the outputs of each input."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], Instances],
        output_dir: str,
        confidence_threshold: float,
        metadata: Metadata,
        submission_format: str = "precise",
    ):
        """
        Args:
            predict: a BGR image -> its detections (Instances on the CPU).
            metadata: what to name the boxes' classes.
            submission_format: of the WIDER FACE files (TEST.WIDERFACE_SUBMISSION_FORMAT).
        """
        self.predict = predict
        self.metadata = metadata
        self.submission_format = submission_format
        self.output_dir = output_dir
        self.confidence_threshold = confidence_threshold
        check_output_folder(output_dir)

    @classmethod
    def from_config(
        cls, cfg, output_dir: str, confidence_threshold: float, allow_random_weights: bool = False
    ):
        predictor = FacePredictor(cfg, allow_random_weights)
        return cls(
            lambda bgr: predictor(bgr)["instances"].to("cpu"),
            output_dir,
            confidence_threshold,
            _metadata(cfg),
            cfg.TEST.WIDERFACE_SUBMISSION_FORMAT,
        )

    def detect(self, bgr: np.ndarray) -> Instances:
        instances = self.predict(bgr)
        return instances[instances.scores >= self.confidence_threshold]

    def draw(self, bgr: np.ndarray, instances: Instances) -> np.ndarray:
        """The detections drawn on a BGR image, as BGR for OpenCV."""
        drawn = (
            Visualizer(bgr[:, :, ::-1], self.metadata)
            .draw_instance_predictions(instances)
            .get_image()
        )
        return drawn[:, :, ::-1]

    def run_image(self, path: str) -> None:
        image = read_image(path, "BGR")
        instances = self.detect(image)
        drawn_path, _, json_path = self._checked_outputs(path, is_video=False)
        write_image(drawn_path, self.draw(image, instances))
        xywhs = instances_to_xywhs(instances)
        stem = os.path.splitext(os.path.basename(path))[0]
        write_widerface_predictions(self.output_dir, {stem: xywhs}, self.submission_format)
        write_text(json_path, json.dumps(detections_json(instances)))

    def _checked_outputs(self, path: str, is_video: bool) -> List[str]:
        """The output files of input ``path``, each checked before any is written."""
        outputs = [os.path.join(self.output_dir, name) for name in _output_names(path, is_video)]
        for output in outputs:
            if os.path.lexists(output) and os.path.realpath(output) == os.path.realpath(path):
                raise InputError(
                    f"--output {self.output_dir} holds the input {path}: {output} would overwrite it"
                )
            check_output_path(output)
        return outputs

    def run_video(self, path: str) -> None:
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise OSError(f"cannot open video {path}")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        video_path, json_path = self._checked_outputs(path, is_video=True)
        stem = os.path.splitext(os.path.basename(path))[0]
        writer: Optional[cv2.VideoWriter] = None
        frames = []
        rate = FrameRate()
        try:
            with atomic_write_path(video_path) as temporary:
                for index, frame in enumerate(
                    tqdm.tqdm(_frames(capture), total=num_frames, desc=stem)
                ):
                    instances, drawn = self._detect_and_draw(frame, rate)
                    if writer is None:
                        writer = cv2.VideoWriter(
                            temporary,
                            cv2.VideoWriter_fourcc(*"mp4v"),
                            fps,
                            (drawn.shape[1], drawn.shape[0]),
                        )
                    writer.write(np.ascontiguousarray(drawn))
                    frames.append({"frame": index, "detections": detections_json(instances)})
                if writer is None:
                    raise OSError(f"video {path}: no frame could be decoded")
                writer.release()
                writer = None
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        write_text(json_path, json.dumps(frames))
        _log_frame_rate(path, rate, fps)

    def _detect_and_draw(self, frame: np.ndarray, rate: FrameRate) -> Tuple[Instances, np.ndarray]:
        """A video frame's detections, timed into ``rate``, and the frame drawn with them and the rate."""
        start = time.perf_counter()
        instances = self.detect(frame)
        rate.add(time.perf_counter() - start)
        return instances, draw_frame_rate(
            np.ascontiguousarray(self.draw(frame, instances)), rate.recent
        )

    def run_camera(self, index: int, window: str = "srn_d2 faces") -> FrameRate:
        """Detect on camera ``index``'s frames and show them, with the detection frame rate,
        in a window until Esc or q is pressed or the camera stops; returns the rate."""
        capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            raise OSError(f"cannot open camera {index} (--webcam {index})")
        rate = FrameRate()
        try:
            _open_window(window)
            try:
                for frame in _frames(capture):
                    _, drawn = self._detect_and_draw(frame, rate)
                    cv2.imshow(window, drawn)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        break
            finally:
                cv2.destroyWindow(window)
        finally:
            capture.release()
        _log_frame_rate(f"camera {index}", rate, capture_fps=0.0)
        return rate


def _open_window(name: str) -> None:
    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise InputError(
            "--webcam shows its frames in a window, which this OpenCV cannot open "
            "(opencv-python-headless has no GUI): install opencv-python, or detect on "
            "a recorded video with --input"
        ) from None


def _log_frame_rate(source: str, rate: FrameRate, capture_fps: float) -> None:
    """How fast detection ran on ``source``, and whether it kept up with the frames' own rate."""
    message = f"{source}: {rate.frames} frames, detection at {rate.overall:.1f} frames per second"
    if capture_fps > 0:
        verdict = (
            "keeps up"
            if rate.overall >= capture_fps
            else f"is {capture_fps / rate.overall:.1f}x too slow"
        )
        message += f"; the video runs at {capture_fps:.1f}, so detection {verdict}"
    logger.info(message)


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def _folder_images(folder: str) -> List[str]:
    """The folder's image files; entries named like images that are no regular file (a FIFO, which
    a tar archive can carry, would block the read forever; a device; a folder) are named and left out."""
    named = sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
    )
    others = [path for path in named if not os.path.isfile(path)]
    if others:
        logger.warning(
            f"skipped {len(others)} entries of {folder} that are not regular files: {others}"
        )
    return [path for path in named if os.path.isfile(path)]


def _output_names(path: str, is_video: bool) -> List[str]:
    stem, extension = os.path.splitext(os.path.basename(path))
    return (
        [stem + ".mp4", stem + ".json"]
        if is_video
        else [stem + extension, stem + ".txt", stem + ".json"]
    )


def plan_inputs(inputs: List[str]) -> List[Tuple[str, bool, bool]]:
    """(path, is_video, named directly) per input file, folders expanded to their images.

    Raises FileNotFoundError for a missing input, and ValueError when two
    inputs would write the same output file (``x.jpg`` and ``x.png`` both write ``x.txt``).
    """
    plan = []
    for path in inputs:
        if os.path.isdir(path):
            plan += [(image, False, False) for image in _folder_images(path)]
        elif not os.path.exists(path):
            raise FileNotFoundError(f"input {path} does not exist")
        elif not os.path.isfile(path):
            raise InputError(
                f"input {path} is not a regular file (a FIFO or a device would block the read)"
            )
        else:
            plan.append((path, os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS, True))
    writers: Dict[str, str] = {}
    for path, is_video, _ in plan:
        for name in _output_names(path, is_video):
            if name in writers and writers[name] != path:
                raise InputError(
                    f"{writers[name]} and {path} would both write {name}; "
                    "run them into different --output folders"
                )
            writers[name] = path
    return plan


def run_demo(make_demo: Callable[[], "FaceDemo"], inputs: List[str]) -> DemoSummary:
    """Detect on every input; the demo is made once the inputs are known to be valid."""
    plan = plan_inputs(inputs)
    demo = make_demo()
    summary = DemoSummary()
    for path, is_video, named_directly in tqdm.tqdm(plan, desc="inputs", disable=len(plan) < 2):
        if is_video:
            demo.run_video(path)
            summary.videos += 1
            continue
        try:
            demo.run_image(path)
            summary.images += 1
        except (OSError, ImageTooLargeError) as error:
            # An image named on the command line must work; one among a folder's may be skipped.
            if named_directly:
                raise
            logger.warning(f"skipped: {error}")
            summary.skipped.append(path)
    if summary.skipped:
        logger.warning(
            f"skipped {len(summary.skipped)} files, unreadable or too large: {summary.skipped}"
        )
    logger.info(
        f"wrote the results of {summary.images} images and {summary.videos} videos to {demo.output_dir}"
    )
    return summary
