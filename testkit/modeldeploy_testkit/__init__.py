"""What modeldeploy's tests and benchmarks run against, kept apart from the product.

The local control plane and its helpers (`cluster`, `operator_process`, `kubeapi`, `watches`), the node agent that
runs model pods as real processes (`nodeagent`), traffic (`loadgen`, `traffic`), harnesses for the model server
(`runtime_server`) and Argo CD (`argocd`), and the benchmarks (`bench`, run as `python -m modeldeploy_testkit.bench`).
The shell scripts that start and stop the processes live beside this package, in testkit/scripts/.
"""
