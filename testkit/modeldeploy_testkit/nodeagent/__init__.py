"""A small kubelet for the local control plane: it registers extra nodes and runs their pods as real processes.

Run it as `.venv/bin/python -m modeldeploy_testkit.nodeagent`; see README.md in this directory.
"""
