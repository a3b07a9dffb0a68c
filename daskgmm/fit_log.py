"""What a fit says as it goes: log lines on the ``daskgmm`` logger, and scikit-learn's
``verbose`` prints (same wording, so scripts that read them keep working)."""

import logging

logger = logging.getLogger("daskgmm")


def log_run_start(estimator, init):
    """An initialisation (run ``init`` of ``n_init``) begins."""
    if estimator.verbose:
        print(f"Initialization {init}")


def log_iteration(estimator, n_iter, lower_bound, change, seconds):
    """One EM iteration is done."""
    logger.info("iteration %d lower bound %.10g change %.3g (%.3fs)",
                n_iter, lower_bound, change, seconds)
    if estimator.verbose and n_iter % estimator.verbose_interval == 0:
        if estimator.verbose == 1:
            print(f"  Iteration {n_iter}")
        else:
            print(f"  Iteration {n_iter}\t time lapse {seconds:.5f}s\t ll change {change:.5f}")


def log_run_end(estimator, lower_bound, converged, seconds):
    """A run (one initialisation, iterated) ends."""
    message = "converged" if converged else "did not converge"
    logger.info("initialization %s, lower bound %.10g (%.3fs)", message, lower_bound, seconds)
    if estimator.verbose == 1:
        print(f"Initialization {message}.")
    elif estimator.verbose >= 2:
        print(f"Initialization {message}. time lapse {seconds:.5f}s\t lower bound "
              f"{lower_bound:.5f}.")
