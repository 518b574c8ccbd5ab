package Test::Nginx::Cluster;

# N nginx nodes sharing one port map, for zone_sync tests: write on one
# node, read on another.

=head1 NAME

Test::Nginx::Cluster - several nginx nodes in one test

=head1 SYNOPSIS

    use Test::More;
    use Test::Nginx;
    use Test::Nginx::Cluster;

    my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)
        ->plan(5);              # 5 + 3 "no alerts in error.log" tests

    $c->write_file_expand(<<'EOF');

    %%TEST_GLOBALS%%

    events {
    }

    stream {
        %%TEST_GLOBALS_STREAM%%

        server {
            listen 127.0.0.1:%%NODE_SYNC%%;
            zone_sync;
            %%OTHER_SYNC_SERVERS%%
        }
    }

    http {
        %%TEST_GLOBALS_HTTP%%

        server {
            listen 127.0.0.1:%%NODE_HTTP%%;
            location / { return 200 "node %%NODE%%"; }
        }
    }

    EOF

    $c->run();

    like(http_get('/', port => $c->http_port(1)), qr/node 1/, 'node 1');
    like($c->http_get(1, '/'), qr/node 1/, 'same');
    my ($status, $json) = http_json($c->node(2), GET => '/api/');

    wait_for(sub { ... read on node 2 ... }, timeout => 5)

    $c->stop_node(1);
    $c->start_node(1);
    $c->reload_node(0);
    $c->kill_node(2, 'KILL');      # crash: master and workers at once

=head1 PORTS AND TOKENS

Node C<i> (0..9) owns the symbolic ports C<8000 + 100*i + k> (k 0..99)
of the shared port map: C<< $c->port($i, $k) >> is C<port(8000 + 100*$i + $k)>.
By convention k=80 is the node's HTTP port (so node 0's is port(8080),
the default of http_get) and k=81 its zone_sync port.

Tokens expanded per node by C<write_file_expand>, before the usual
Test::Nginx expansion (C<%%TEST_GLOBALS%%>, C<127.0.0.1:8xxx> ...):

    %%NODE%%                 the node index
    %%NODES%%                the number of nodes
    %%NODE_HTTP%%            this node's HTTP port    (k = 80)
    %%NODE_SYNC%%            this node's sync port    (k = 81)
    %%NODE_PORT_k%%          this node's port k
    %%NODEj_HTTP%%, %%NODEj_SYNC%%, %%NODEj_PORT_k%%  node j's ports
    %%ALL_SYNC_SERVERS%%     "zone_sync_server 127.0.0.1:P;" for every node
    %%OTHER_SYNC_SERVERS%%   the same for every node but this one

The template may also be a code ref, called as C<< $code->($i, $cluster) >>
for each node, returning that node's template.

=head1 METHODS

    Test::Nginx::Cluster->new($n)      # 1..10 nodes
    ->node($i)  ->nodes  ->size  ->testdir
    ->port($i, $k)  ->http_port($i)  ->sync_port($i)
    ->has(@f)  ->has_module($f)  ->has_version($v)  ->has_daemon($p)
    ->plan($n)                         # $n + one log check per node
    ->todo_alerts  ->ignore_log(qr/.../)          # all nodes
    ->write_file_expand([$name,] $template)  ->write_file($name, $content)
    ->expand_node($i, $text)
    ->run  ->try_run($message)  ->stop          # stop: all nodes at once
    ->start_node($i)  ->stop_node($i)  ->reload_node($i, %opts)
    ->kill_node($i, $sig = 'KILL')
    ->test_config($i, $conf)  ->http_get($i, $uri, %opts)
    ->run_daemon(...)                  # on node 0, stopped with it

Each node is a Test::Nginx object (C<< $c->node($i) >>) with its own
directory C<< <cluster dir>/node<i> >>, named C<node<i>> in test names.

=cut

use strict;
use warnings;

use File::Path qw(remove_tree);
use File::Temp ();
use Scalar::Util qw(weaken);
use Test::More ();

use Test::Nginx ();
use Test::Nginx::Util ();

my @CLUSTERS;

use constant HTTP_K => 80;
use constant SYNC_K => 81;

sub new {
    my ($class, $n, %opts) = @_;
    $n //= 2;
    die "a cluster has 1..10 nodes\n" if $n < 1 || $n > 10;

    my $base = File::Temp::tempdir('nginx-cluster-XXXXXXXXXX',
        TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $base;

    my $self = bless { _base => $base, _owner => $$, _nodes => [] }, $class;

    for my $i (0 .. $n - 1) {
        push @{$self->{_nodes}}, Test::Nginx->new(
            testdir => "$base/node$i",
            name => "node$i",
            http_port => $self->port($i, HTTP_K),
        );
    }

    push @CLUSTERS, $self;
    weaken($CLUSTERS[-1]);

    return $self;
}

sub port {
    my ($self, $i, $k) = @_;
    die "port key $k out of range\n" if $k < 0 || $k > 99;
    return Test::Nginx::Util::port(8000 + 100 * $i + $k);
}

sub http_port { my ($self, $i) = @_; return $self->port($i, HTTP_K) }
sub sync_port { my ($self, $i) = @_; return $self->port($i, SYNC_K) }

sub size { return scalar @{$_[0]->{_nodes}} }
sub nodes { return @{$_[0]->{_nodes}} }
sub testdir { return $_[0]->{_base} }

sub node {
    my ($self, $i) = @_;
    my $node = $self->{_nodes}[$i];
    die "no node $i\n" unless defined $node;
    return $node;
}

# feature checks and plan: as Test::Nginx (plan counts one log check
# per node, and per any other live Test::Nginx object)
sub has { my $self = shift; $self->node(0)->has(@_); return $self }
sub has_daemon { my $self = shift; $self->node(0)->has_daemon(@_); $self }
sub has_module { my $self = shift; return $self->node(0)->has_module(@_) }
sub has_version { my $self = shift; return $self->node(0)->has_version(@_) }

sub plan {
    my ($self, $plan) = @_;
    $self->node(0)->plan($plan);
    return $self;
}

sub todo_alerts {
    my ($self) = @_;
    $_->todo_alerts for $self->nodes;
    return $self;
}

sub ignore_log {
    my ($self, @re) = @_;
    $_->ignore_log(@re) for $self->nodes;
    return $self;
}

###############################################################################

sub _sync_servers {
    my ($self, $indent, $skip) = @_;
    my @lines;
    for my $j (0 .. $self->size - 1) {
        next if defined $skip && $j == $skip;
        push @lines, "${indent}zone_sync_server 127.0.0.1:"
            . $self->sync_port($j) . ";";
    }
    return join("\n", @lines);
}

# per-node tokens; the result still goes through Test::Nginx::expand
sub expand_node {
    my ($self, $i, $conf) = @_;

    $conf =~ s/^([ \t]*)%%ALL_SYNC_SERVERS%%/$self->_sync_servers($1)/gme;
    $conf =~ s/^([ \t]*)%%OTHER_SYNC_SERVERS%%/
        $self->_sync_servers($1, $i)/gmex;
    $conf =~ s/%%ALL_SYNC_SERVERS%%/$self->_sync_servers(' ')/ge;
    $conf =~ s/%%OTHER_SYNC_SERVERS%%/$self->_sync_servers(' ', $i)/ge;

    $conf =~ s/%%NODES%%/$self->size/ge;
    $conf =~ s/%%NODE%%/$i/g;
    $conf =~ s/%%NODE_HTTP%%/$self->http_port($i)/ge;
    $conf =~ s/%%NODE_SYNC%%/$self->sync_port($i)/ge;
    $conf =~ s/%%NODE_PORT_(\d+)%%/$self->port($i, $1)/ge;
    $conf =~ s/%%NODE(\d)_HTTP%%/$self->http_port($1)/ge;
    $conf =~ s/%%NODE(\d)_SYNC%%/$self->sync_port($1)/ge;
    $conf =~ s/%%NODE(\d)_PORT_(\d+)%%/$self->port($1, $2)/ge;

    return $conf;
}

# write_file_expand($template) writes nginx.conf on every node;
# write_file_expand($name, $template) any file
sub write_file_expand {
    my ($self, @args) = @_;
    my ($name, $tpl) = @args == 1 ? ('nginx.conf', $args[0]) : @args;

    for my $i (0 .. $self->size - 1) {
        my $conf = ref $tpl eq 'CODE' ? $tpl->($i, $self) : $tpl;
        $self->node($i)->write_file_expand($name,
            $self->expand_node($i, $conf));
    }
    return $self;
}

sub write_file {
    my ($self, $name, $content) = @_;
    $_->write_file($name, $content) for $self->nodes;
    return $self;
}

###############################################################################

sub run {
    my ($self) = @_;
    $_->run() for $self->nodes;
    return $self;
}

sub try_run {
    my ($self, $message) = @_;
    $_->try_run($message) for $self->nodes;
    return $self;
}

sub stop {
    my ($self) = @_;
    $_->stop_daemons for $self->nodes;
    Test::Nginx::_stop_many($self->nodes);
    return $self;
}

sub start_node { my ($self, $i) = @_; $self->node($i)->run(); $self }
sub stop_node { my ($self, $i) = @_; $self->node($i)->stop_nginx(); $self }

# returns reload()'s result: 1 when the new configuration is in effect
sub reload_node {
    my ($self, $i, %opts) = @_;
    return $self->node($i)->reload(%opts);
}

sub kill_node {
    my ($self, $i, $sig) = @_;
    $self->node($i)->kill_nginx($sig // 'KILL');
    return $self;
}

sub test_config {
    my ($self, $i, $conf) = @_;
    return $self->node($i // 0)->test_config($conf);
}

# http_get on node $i's HTTP port
sub http_get {
    my ($self, $i, $uri, %extra) = @_;
    return Test::Nginx::http_get($uri, port => $self->http_port($i),
        %extra);
}

sub run_daemon {
    my $self = shift;
    return $self->node(0)->run_daemon(@_);
}

###############################################################################

sub _finalize {
    my ($self) = @_;
    return if $self->{_finalized} || $self->{_owner} != $$;
    $self->{_finalized} = 1;
    local ($?, $!, $@);

    $self->stop();
    $_->_finalize for $self->nodes;

    if ($ENV{TEST_NGINX_LEAVE}) {
        Test::More::diag("cluster directory left: $self->{_base}");
    } else {
        remove_tree($self->{_base});
    }
}

sub DESTROY {
    my ($self) = @_;
    $self->_finalize();
}

# runs before Test::Nginx's END (defined later), so nodes are stopped
# together and the cluster directory is removed after them
END {
    local ($?, $!, $@);
    $_->_finalize for grep { defined } @CLUSTERS;
}

1;
