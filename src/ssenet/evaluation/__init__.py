"""Scoring: the metrics (`metrics`: mIoU, mFN, mFP, the alpha sweep), the guard against scoring
pseudo labels on the wrong list or masks (`guard`), and the `ssenet eval` verb (`command`)."""
