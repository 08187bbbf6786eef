"""Ground-truth file formats that both the datasets (``srn_d2.data``) and the evaluations
(``srn_d2.evaluation``) read: numpy and scipy only, so that the evaluation tools start
without torch or Detectron2, and neither of those packages imports the other."""
