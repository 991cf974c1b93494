"""Gradient-bias instrument internals (``bsstudy bias``): statistics, measurement engine, network pool, figure.

``stats`` turns the Gram matrix of K group-mean gradient errors into bias / noise / CI numbers;
``engine`` draws batches, evaluates an objective and forms those group means (embedding space) and
pushes them through a Jacobian-transpose operator (parameter space); ``network`` builds the frozen
network, the augmented pool and that operator; ``figure`` draws bias.png/pdf. See docs/bias.md.
"""
