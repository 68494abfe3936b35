"""The semantic-segmentation task's plug-ins (joint detection + per-pixel classes): dataset, ..."""
