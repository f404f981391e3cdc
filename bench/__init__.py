"""Benchmarks of deployer on the local lab: overhead against plain ansible-playbook, zero
downtime under load, time to restore after a failed smoke check, and scale (``python -m bench``)."""
