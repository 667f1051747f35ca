"""Package discovery: the library lives in src/rlhf, each service in services/<name>.

The services directory sits at the top level (one directory per service, with its
server) but installs under the single import root as rlhf.services. The shipped
pipeline specs, pipelines/*.yaml at the top level, install the same way as package
data in rlhf/pipeline_specs: one copy in the repository, found by rlhf.pipelines in
an installed wheel (tests/test_packaging.py checks the wheel holds them all).
"""

from setuptools import find_packages, setup

service_packages = ["rlhf.services"] + [
    f"rlhf.services.{name}" for name in find_packages("services")
]

setup(
    packages=find_packages("src") + service_packages + ["rlhf.pipeline_specs"],
    package_dir={"": "src", "rlhf.services": "services", "rlhf.pipeline_specs": "pipelines"},
)
