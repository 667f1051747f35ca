"""Package discovery: the library lives in src/rlhf, each service in services/<name>.

The services directory sits at the top level (one directory per service, with its
server and Dockerfile) but installs under the single import root as rlhf.services.
"""

from setuptools import find_packages, setup

service_packages = ["rlhf.services"] + [
    f"rlhf.services.{name}" for name in find_packages("services")
]

setup(
    packages=find_packages("src") + service_packages,
    package_dir={"": "src", "rlhf.services": "services"},
)
