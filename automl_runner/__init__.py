"""The multi-tenant AutoML queue (ease.ml): store, catalogue, scheduler, workers, promotion."""
