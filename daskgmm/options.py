"""The choices daskgmm's parameters and job keys take: one home for each list, importing nothing.

The estimator, its validation, the model selection and the job schema all read these, so a
choice added here is accepted everywhere at once, and reading the job schema loads no Dask.
"""

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
CRITERIA = ("bic", "aic")
PIPELINES = ("segment", "select", "anomaly", "fit", "predict")
INPUT_FORMATS = ("auto", "zarr", "images", "csv", "parquet")
IDENTITIES = ("stat", "content")
GENERATORS = ("sample-scene", "sample-table")
