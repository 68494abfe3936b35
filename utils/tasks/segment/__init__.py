"""The segment task's plug-ins (task, loss, metric, dataset, ...)."""
