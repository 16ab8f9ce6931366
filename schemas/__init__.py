"""Contracts: Arrow schemas of every table and the typed run configs."""
