"""Running exported SRN models without torch or Detectron2 (see ``srn_d2.tools.export``)."""
