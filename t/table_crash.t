#!/usr/bin/perl

# A worker killed in the middle of changing a zone (issue 13, defect 12):
# gdb stops a worker inside a table mutation, with the zone's lock held,
# and kills it there. nginx releases the lock of the dead worker; the next
# process to take it finds the zone's mutation mark, rebuilds the zone
# with an alert, and the zone keeps working (no crash, no hang).

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();

use Test::Nginx;

###############################################################################

my $gdb = (grep { -x } map { "$_/gdb" } split /:/, $ENV{PATH})[0];
plan(skip_all => 'gdb not installed') unless $gdb;

# gdb finds the line only in a module built with debug information (the
# Debian package's is stripped)
my $module = Test::Nginx::module_path();
plan(skip_all => "no debug information in $module")
	unless `objdump -h '$module' 2>/dev/null` =~ /\.debug_line/;

# the line of Table::write, rewriting a record with a longer value, where
# the old record has left the index and the new one is not in it yet (the
# zone's lock is held and the mark is set there)
my $src = "$FindBin::Bin/../core/src/table/mod.rs";
open my $fh, '<', $src or die "$src: $!";
my $line;
while (<$fh>) {
	if (/^\s*t\.index_insert_at\(b, r\);/) { $line = $.; last }
}
close $fh;
die "no mutation line in $src" unless $line;

my $t = Test::Nginx->new()->has(qw/http/)->plan(6);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m;
    keyval $arg_k $hv zone=h;

    server {
        listen 127.0.0.1:8080;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

$t->run();

###############################################################################

sub get {
	my ($k) = @_;
	my $r = http_get("/get?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

http_get("/set?k=k$_&v=v$_") for 1 .. 50;
is(get('k7'), 'v7', 'zone filled');

my ($pid) = $t->worker_pids;
my $out = $t->testdir() . '/gdb.out';
my $gdb_pid = fork() // die "fork: $!";
if ($gdb_pid == 0) {
	open STDOUT, '>', $out or die;
	open STDERR, '>&', \*STDOUT or die;
	exec $gdb, '-nx', '-batch', '-p', $pid,
		'-ex', 'set breakpoint pending on',
		'-ex', "break table/mod.rs:$line",
		'-ex', 'continue',
		'-ex', 'kill',
		'-ex', 'quit';
	exit 127;
}

# once the worker runs again under gdb (traced, and sleeping in its event
# loop rather than stopped), a write stops at the breakpoint
sub traced_and_running {
	open my $st, '<', "/proc/$pid/status" or return 0;
	local $/;
	my $status = <$st>;
	return $status =~ /^TracerPid:\s+[1-9]/m && $status =~ /^State:\s+S/m;
}
wait_for(\&traced_and_running, timeout => 30) or diag(`cat $out`);
my $s = http_start("GET /set?k=k7&v=longer-value HTTP/1.0\nHost: localhost\n\n");
wait_for(sub { waitpid($gdb_pid, POSIX::WNOHANG()) == $gdb_pid }, timeout => 20)
	or do { diag(`cat $out; cat /proc/$pid/status | head -3`); kill 'KILL', $gdb_pid; };
like(`cat $out`, qr/Breakpoint 1,/, 'worker stopped inside a mutation, killed');

# the master respawns the worker; the zone is rebuilt at the next lock
ok(wait_for(sub { (get('k7') // '') eq 'v7' }, timeout => 10),
	'the record being rewritten is back, with its old value');
my $log = $t->read_file('error.log');
like($log, qr/\[alert\].*keyval zone "h" was left mid-change by a process that died: rebuilt, 50 records kept/,
	'rebuild logged');
http_get('/set?k=after&v=ok');
is(get('after'), 'ok', 'zone writable');
is(get('k50'), 'v50', 'every record there');

$t->ignore_log(qr/exited on signal/, qr/was locked by/,
	qr/was left mid-change by a process that died/);

###############################################################################
