"""Adapters: the engine's connections to the outside world (Ansible, load balancers, journal).

The engine depends only on the protocols defined here; concrete adapters are chosen by the CLI.
"""
