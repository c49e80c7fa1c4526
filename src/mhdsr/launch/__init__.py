"""Launching on clusters: submitit jobs for training (``mhdsr train`` and ``mhdsr forecast train``:
multi-node, requeued and resumed on timeout or preemption) and job arrays for bulk sampling;
``mhdsr launch {train,forecast,sample,status}`` is the command (docs/launch.md).

:mod:`~mhdsr.launch.config` (``LaunchConfig``, override routing), :mod:`~mhdsr.launch.jobs`
(the pickled job callables), :mod:`~mhdsr.launch.submit` (submission, executors),
:mod:`~mhdsr.launch.status` (a job folder read back), :mod:`~mhdsr.launch.cli`.
"""
