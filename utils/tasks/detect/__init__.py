"""The detect task's plug-ins (task, loss, metric, dataset, ...)."""
