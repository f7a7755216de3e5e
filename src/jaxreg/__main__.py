from jaxreg.cli import run

run()
