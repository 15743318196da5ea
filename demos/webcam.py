"""Webcam / video demo: ``python demos/webcam.py [--source 0|FILE|URL] ...`` (same as ``faceanalysis demo``).

See ``python demos/webcam.py --help`` and demos/README.md.
"""
import sys

from faceanalysis.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
