"""Running the same work in several threads at once."""


def run_in_threads(work, names, repeats=5):
    """Runs work(name) `repeats` times in one thread per name, all at once; {name: last result}.
    An exception in any thread is raised here."""
    import threading

    results, errors = {}, []

    def run(name):
        try:
            for _ in range(repeats):
                results[name] = work(name)
        except Exception as e:  # raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
