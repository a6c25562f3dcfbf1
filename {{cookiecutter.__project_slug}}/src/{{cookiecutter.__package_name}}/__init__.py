"""{{ cookiecutter.description }}"""

PACKAGE = "{{ cookiecutter.__package_name }}"
