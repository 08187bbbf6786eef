"""Applications built on the library, each behind a command of ``srn_d2.tools``: the mini_faces
study (``ablation``), the face demo (``detect``), the benchmark harness (``benchmark``), the GPU
check (``benchmark_gpu``) and anchor coverage (``anchor_stats``). Nothing below ``apps`` imports it."""
