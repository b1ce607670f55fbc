"""Video re-id data: dataset loaders (MARS, LPW, mcsa tracklet folders), P x K sampler, clip sampling, transforms,
tracklet export from video + MOT boxes, and CMC/mAP evaluation. Torch is imported only where needed."""
