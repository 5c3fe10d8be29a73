from celeba.reader import run_command
from train.train import main

if __name__ == "__main__":
    run_command(main)
