#!/usr/bin/env bash
# make-repo.sh DIR: turns the sample site into a git repository to deploy from: DIR.git (a
# bare repository, the "origin", with a post-receive hook that sends Stoke a signed push
# webhook) and DIR (a working copy to edit and push from). Leaves them alone when DIR.git
# exists already. Used by make run (var/sample-site), make demo and the e2e test.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
here=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
dir=$1
if [ -d "$dir.git" ]; then
	echo "sample repository: $dir.git exists already"
	exit 0
fi
git init -q --bare -b main "$dir.git"
install -m 755 "$here/post-receive" "$dir.git/hooks/post-receive"
rm -rf "$dir"
git init -q -b main "$dir"
git -C "$dir" config user.name "Stoke Newcomer"
git -C "$dir" config user.email newcomer@example.com
mkdir -p "$dir/public"
cp "$here/public/index.html" "$dir/public/index.html"
cp "$here/deploy.sh" "$dir/deploy.sh"
git -C "$dir" add -A
git -C "$dir" commit -q -m "Sample site"
git -C "$dir" remote add origin "$(cd "$dir.git" && pwd)"
git -C "$dir" push -q -u origin main 2>/dev/null
echo "sample repository: $(cd "$dir.git" && pwd) (work in $dir, push with git -C $dir push)"
