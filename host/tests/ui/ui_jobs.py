"""RQ job functions of the dashboard's browser tests (beside host/tests/rq/jobs.py).

    hostile_message()   fails with a message and traceback that carry HTML and a <script>:
                        the dashboard must show them as text, never run them
"""


def hostile_message():
    raise ValueError(
        "<script>window.__pwned = 1; document.title = 'pwned'</script>"
        "<img src=x onerror=\"window.__pwned = 2\"> is not a valid amount"
    )
