# deploy.sh: the sample site's deploy script (stoke site create ... --script
# tests/sample-site/deploy.sh). Stoke runs it in the new release's folder after checking out
# the commit; a non-zero exit fails the deployment and the previous release keeps serving.
# The "build": stamp the commit into the page.
set -eu
short=$(printf '%.12s' "$STOKE_COMMIT")
echo "building $STOKE_COMMIT for $STOKE_DOMAIN"
test -f public/index.html
sed -i "s/@COMMIT@/$short/" public/index.html
echo "stamped commit $short into public/index.html"
