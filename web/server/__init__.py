"""The public server's defences: what one visitor may cost the others, and what a request may read.

blocks.py (the Blocks whose errors are ours and whose requests are bounded), limits.py (body sizes and
deadlines), fair_queue.py (each page's and address's share of the queue), uploads.py and sandbox.py
(uploads test-decoded in child processes, the upload folder bounded), guards.py (what may be read),
results.py (result files' lifetime and budget), memory.py (freed memory back to the system), and
patches.py: every change made to Gradio's or uvicorn's own behaviour, in one documented place.
"""
