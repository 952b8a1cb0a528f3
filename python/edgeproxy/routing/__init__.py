"""Routing decisions beyond a route's fixed chain: the task of each request (``tasks``), the task
classifier (``classifier``) and its synthetic example corpus (``corpus``)."""
