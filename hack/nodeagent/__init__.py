"""A small kubelet for the local control plane: it registers extra nodes and runs their pods as real processes.

Run it as `.venv/bin/python -m hack.nodeagent` from the repository root; see README.md in this directory.
"""
