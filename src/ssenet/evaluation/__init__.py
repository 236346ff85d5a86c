"""Scoring: the metrics (`metrics`: mIoU, mFN, mFP, the alpha sweep), what labels say without
masks (`label_free`: per class shares of images and pixels), the guard against scoring pseudo
labels on the wrong list or masks (`guard`), and the `ssenet eval` verb (`command`)."""
