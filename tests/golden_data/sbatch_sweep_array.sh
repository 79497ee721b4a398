#!/bin/bash

# Parameters
#SBATCH --array=0-3%2
#SBATCH --cpus-per-task=2
#SBATCH --job-name=demo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/shared/ada/runs/demo-20250101-000000-abcd/submitit/%A_%a_0_log.out
#SBATCH --requeue
#SBATCH --signal=USR2@180
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /shared/ada/runs/demo-20250101-000000-abcd/submitit/%A_%a_%t_log.out --kill-on-bad-exit=1 --cpus-per-task=2 /shared/ada/venv/bin/python -u -m submitit.core._submit /shared/ada/runs/demo-20250101-000000-abcd/submitit
