"""{{ cookiecutter.description | replace('\\', '\\\\') | replace('"', '\\"') }}"""

PACKAGE = "{{ cookiecutter.__package_name }}"
