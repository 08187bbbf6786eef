"""Deployment: exporting SRN to ONNX / TorchScript (``srn_d2.deploy.export``, needs torch and
Detectron2) and running the exported models without either (``srn_d2.deploy.onnx_runtime``)."""
