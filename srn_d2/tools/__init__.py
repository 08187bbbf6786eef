"""Command-line tools: benchmark, demo, anchor statistics, weight conversion, the main job."""
