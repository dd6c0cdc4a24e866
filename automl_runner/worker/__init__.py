"""The worker: trials claimed from the store, trained on a device under a thread cap, and promoted."""
