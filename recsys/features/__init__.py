"""Features: offline stats tables (stats), the Feast store (store), fast online writes (bulk_write).

Submodules are imported explicitly: feast is slow to import.
"""
