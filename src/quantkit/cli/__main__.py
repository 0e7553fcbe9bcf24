from quantkit.cli import run

if __name__ == "__main__":  # vLLM spawns workers that re-import the main module
    run()
