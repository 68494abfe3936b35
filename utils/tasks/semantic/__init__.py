"""The semantic-segmentation task's plug-ins (label tables, metric, Cityscapes conversion, submission, ...)."""
