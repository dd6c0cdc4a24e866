"""Which trial runs next: the schedulers, early stopping, the Gaussian process, the matrices and the simulator."""
