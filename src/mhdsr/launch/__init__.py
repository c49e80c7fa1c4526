"""Launching on clusters: submitit jobs for training (multi-node, requeued and resumed on
timeout or preemption) and job arrays for bulk sampling; ``mhdsr launch`` is the command."""
