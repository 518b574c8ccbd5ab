#!/usr/bin/perl

# A cluster over unix sockets: every node lists every node's socket, its
# own included, and skips its own; writes propagate, a restarted node
# (its socket file recreated) catches up.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream unix zone_sync/)->plan(7);

my @sock = map { $c->node($_)->testdir . '/sync.sock' } 0 .. 2;
my $servers = join "\n", map { "        zone_sync_server unix:$_;" } @sock;

$c->write_file_expand(<<"EOF");

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen unix:%%TESTDIR%%/sync.sock;
        zone_sync;
$servers
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval \$arg_k \$hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set \$hv \$arg_v; return 200 "ok"; }
        location /get { return 200 "[\$hv]"; }
    }
}

EOF

# nginx would log connect() to an absent unix socket (a node not started
# yet) at crit: the module checks the path first (tested below)
my $enoent = qr/\[crit\].*connect\(\) to unix:.* failed \(2: No such file or directory\)/;

$c->run();

###############################################################################

sub get {
	my ($i, $k) = @_;
	my $r = $c->http_get($i, "/get?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	$c->http_get($i, "/set?k=$k&v=$v");
}

sub on {
	my ($k, $v, @nodes) = @_;
	return wait_for(sub {
		!grep { (get($_, $k) // '') ne $v } @nodes
	}, timeout => 10);
}

sub log_of { $c->node($_[0])->read_file('error.log') // '' }

###############################################################################

set(0, 'k0', 'zero');
ok(on('k0', 'zero', 1, 2), 'unix: write on node 0 reaches nodes 1 and 2');
set(2, 'k2', 'two');
ok(on('k2', 'two', 0, 1), 'unix: write on node 2 reaches nodes 0 and 1');

my @self = grep {
	my $log = log_of($_);
	$log =~ /connected to node \Qunix:$sock[$_]\E/ || $log =~ /is this node, not syncing/;
} 0 .. 2;
is("@self", '', 'unix: no node connects to itself');

my @others;
wait_for(sub {
	@others = grep {
		my $i = $_;
		grep { $_ != $i && log_of($i) !~ /connected to node \Qunix:$sock[$_]\E/ } 0 .. 2;
	} 0 .. 2;
	!@others;
}, timeout => 10);
is("@others", '', 'unix: every node connects to the two others');

# a restart: the socket file goes (nginx removes it) and comes back

$c->stop_node(1);
set(0, 'late', 'joiner');
$c->start_node(1);
ok(on('late', 'joiner', 1), 'unix: restarted node catches up');
set(1, 'back', 'again');
ok(on('back', 'again', 0, 2), 'unix: its writes reach the others');

my @crit = grep { log_of($_) =~ $enoent } 0 .. 2;
is("@crit", '', 'unix: a node not up yet is no crit error');

###############################################################################
