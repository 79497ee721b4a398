#!/bin/bash

# Parameters
#SBATCH --account=proj-42
#SBATCH --comment='it'"'"'s $(not run) `or this`; "quoted"'
#SBATCH --constraint=h100
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --gpus-per-node=8
#SBATCH --job-name=llm-pretrain
#SBATCH --mail-type=END
#SBATCH --mem=480G
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/shared/ada/runs/demo-20250101-000000-abcd/submitit/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=high
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --time=2160
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /shared/ada/runs/demo-20250101-000000-abcd/submitit/%j_%t_log.out --kill-on-bad-exit=1 --cpus-per-task=64 /shared/ada/venv/bin/python -u -m submitit.core._submit /shared/ada/runs/demo-20250101-000000-abcd/submitit
