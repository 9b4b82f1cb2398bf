"""Settings every test tier shares."""

from __future__ import annotations

import os

# boto3's credential chain would ask the EC2 instance-metadata address when no key is found;
# tests talk only to servers on 127.0.0.1, so that lookup is switched off for every test.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
