#!/bin/sh
# auth-user-pass-verify script of the erebus interop harness (via-file): $1 names a file with
# the username on line 1 and the password on line 2. The accepted pair is in auth-users.txt
# (same format), which the harness writes into the instance directory.
# Its output goes to the server log; each call also adds a line to verify-user.calls, which
# outlives server restarts (tests count the calls: a session that authenticates with a pushed
# auth-token must not call it again).
{ IFS= read -r user; IFS= read -r pass; } < "$1"
{ IFS= read -r want_user; IFS= read -r want_pass; } < auth-users.txt
if [ -n "$want_user" ] && [ "$user" = "$want_user" ] && [ "$pass" = "$want_pass" ]; then
    echo "verify-user.sh: accepted user '$user'"
    echo "accepted $user" >> verify-user.calls
    exit 0
fi
echo "verify-user.sh: REJECTED user '$user'"
echo "rejected $user" >> verify-user.calls
exit 1
