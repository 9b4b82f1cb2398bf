"""Store adapters: one module per kind of store, all behind `base.ObjectStore`."""
