"""The review web app: `run_pipeline.py serve` (FastAPI, one static page with plain JavaScript).

  store.py       read-only view of the event store (runs, cameras, identities, events, thumbnails, embeddings)
  search.py      upload validation, the run's Re-ID model for a query image, faiss ranking of identities
  app.py         the FastAPI app: pages, JSON API under /api, access token, upload limits
  thumbnails.py  ThumbnailStage: the pipeline side, best crop per track -> `track_thumbnails` (JPEG)
"""
